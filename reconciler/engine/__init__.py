"""The reconcile chain (source -> desired -> observe -> plan -> apply -> record), its results and its windows.

The CLI and the daemon both drive a reconcile through `Engine`; neither knows how a step is done.
"""
