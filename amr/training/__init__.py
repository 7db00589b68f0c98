"""Training machinery shared by ``amr train``: checkpoints, distributed setup, progress logs."""
