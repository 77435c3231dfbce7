"""Workflow stages: load -> compute -> write. Entry scripts in workflow_scripts/ call these."""
