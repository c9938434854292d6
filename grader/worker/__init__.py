"""The untrusted side of convgrade.

Everything in this package runs inside the sandbox, next to student code, and is bind-mounted
there as the package ``cgworker``. It therefore imports nothing from ``grader`` (relative
imports only) and nothing that holds checks or solutions. The trusted side imports
:mod:`grader.worker.protocol` to speak the same wire format.
"""
