"""Pseudo-labelling: self-label image-labelled data with a phase-1 model, then convert, merge
and de-duplicate the predictions into a box-annotated training set."""
