"""The public COVIDx sources, each read in its original layout, as COVID-Net's notebook reads it.

detect      which layout a folder is (by its files) and the reader for it
scan        what a reader yields: Entry, Skip, SourceScan
metadata    ieee8023, Actualmed, Figure1 (metadata.csv)
rsna        RSNA Pneumonia Detection Challenge (two label tables + DICOM)
sirm        SIRM / COVID-19 Radiography Database (.xlsx + PNG), and its ieee8023 overlap
csvio       the sources' CSV files read robustly (encodings, renamed columns, CRLF)
"""
