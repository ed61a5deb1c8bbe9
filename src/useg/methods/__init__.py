"""Methods built from shared parts: kmeans baseline, transfgu, maskdistill, alignseg, croc, pass_."""
