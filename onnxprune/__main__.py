"""`python -m onnxprune`."""
import sys

from .cli import main

sys.exit(main())
