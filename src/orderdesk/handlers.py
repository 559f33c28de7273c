"""Import every module that registers job handlers."""
