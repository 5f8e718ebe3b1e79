"""zexec in IPython and Jupyter: the ``%load_ext zexec`` magics and the rich display of
zexec's objects. Importing this package imports neither IPython nor the client SDK."""
