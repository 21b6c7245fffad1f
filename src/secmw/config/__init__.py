"""Settings: ``SecuritySettings`` assembled from every feature's section, the environment variable
names, the generated reference and the ``secmw config`` checks."""
