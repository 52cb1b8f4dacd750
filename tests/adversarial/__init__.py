"""The adversarial token corpus (see ``generate.py``)."""
