"""`python -m onnxprune`."""
import sys

from .entry import main

sys.exit(main())
