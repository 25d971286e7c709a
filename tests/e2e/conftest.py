"""Browser tier: tests/e2e/ holds its helper module (comfy_server) next to the test; make it importable whatever
pytest's import mode is."""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)
