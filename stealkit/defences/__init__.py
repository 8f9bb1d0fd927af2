from stealkit.defences.base import DEFENCES, Defence, build_defence, register_defence

__all__ = ["DEFENCES", "Defence", "build_defence", "register_defence"]
