"""`python -m lmtrain` runs the command line."""

from lmtrain.cli import main

main()
