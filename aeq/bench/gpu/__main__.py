"""``python -m aeq.bench.gpu OUT …``: the GPU check (see ``aeq.bench.gpu.check``)."""

import sys

from aeq.bench.gpu.check import main

sys.exit(main(sys.argv[1:]))
