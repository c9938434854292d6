"""convgrade: grade notebooks for the "Convolutions for Images" chapter.

Student code runs in sandboxed worker processes (:mod:`grader.launcher`); the assignment's
pytest checks run here, in the trusted process, and reach student code only through the
``student`` fixture (:mod:`grader.proxy`). Entry points: :mod:`grader.cli` (the ``convgrade``
command) and :func:`grader.api.grade_notebook`.
"""

__version__ = "0.1.0"
