"""The Python-backend models: model.py, copied into every version folder of the repository, and
torch_model.py, the same with the part in PyTorch, which loadtests.triton_gpu's shims import (not copied)."""
