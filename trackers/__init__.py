"""Video to tracked head sequence: decode, detect, crop, segment, fit the head model (`gafkit track`)."""
