"""The systems the suite measures: schedlog and its peers, one adapter each (see `base`)."""
