"""`hpml synth`: a generated raw corpus in the five COVIDx source layouts, for the demo and tests.

corpus   the folders, tables and quirks of each source layout
files    deterministic writers: PNG/JPEG, DICOM, CSV, the SIRM .xlsx
images   synthetic radiographs with a visible, learnable class pattern
"""
