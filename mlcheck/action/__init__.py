"""The GitHub Action: its inputs, the sandbox PR code runs in, the GPU label gate."""
