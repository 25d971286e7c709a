"""The pack's command line from anywhere: ``python <ComfyUI>/custom_nodes/comfyui-instdiff/instdiff_cli.py convert ...``.

``python -m instancediffusion_core`` needs the pack folder as the current directory; this file puts the pack folder
on the path itself, so the command works from the ComfyUI root (or any folder) and with ComfyUI's embedded Python.
ComfyUI never imports this file (it imports the pack's ``__init__.py`` only).
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from instancediffusion_core.__main__ import main

    sys.argv[0] = "instdiff_cli.py"
    sys.exit(main())
