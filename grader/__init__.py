"""convgrade: grade Jupyter notebooks with an assignment's pytest checks.

Student code runs in sandboxed worker processes (:mod:`grader.sandbox.launcher`); the
assignment's pytest checks run here, in the trusted process, and reach student code only
through the ``student`` fixture (:mod:`grader.engine.proxy`). Entry points:
:mod:`grader.commands.cli` (the ``convgrade`` command) and :func:`grader.api.grade_notebook`.
"""

import os

__version__ = "0.1.0"

# Checks may import TensorFlow in this process (the bundled ones do not: they compare with
# an answer key in NumPy); its start-up log lines would drown the grader's own
# output. An explicit setting by the user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
