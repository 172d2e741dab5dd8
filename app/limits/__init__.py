"""Who may send to a bin, and how often: rate limits shared by every process, sender allowlists.

Plain classes and functions, usable without Flask: the capture path and bin creation call them
before doing any work of their own.
"""
