"""The wire contract between producers, the model and the monitor: post messages in, result records out.

Pure pydantic: importing it loads neither torch nor the model package.
"""
