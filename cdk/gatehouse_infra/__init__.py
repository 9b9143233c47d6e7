"""Gatehouse's AWS infrastructure: the stacks ``cdk/app.py`` puts together."""
