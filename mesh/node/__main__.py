import sys

from mesh.node.cli import main

sys.exit(main())
