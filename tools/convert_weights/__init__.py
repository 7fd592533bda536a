"""PyTorch OFA checkpoints (ModelScope dirs, OFA-Sys fairseq .pt) <-> ofa-jax model dirs."""
from .convert import ConversionError, convert, export_pytorch, state_dict_to_variables, variables_to_state_dict

__all__ = ["ConversionError", "convert", "export_pytorch", "state_dict_to_variables", "variables_to_state_dict"]
