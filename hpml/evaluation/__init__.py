"""`hpml evaluate`: COVID-Net's metrics over a whole split, and how sure they are.

    evaluate      every image counted once across ranks; RUN/eval/<split>/
    metrics       sensitivity, PPV, accuracy, macro P/R/F1 from a confusion matrix
    intervals     Wilson intervals per class, a bootstrap that resamples patients
    curves        one-vs-rest ROC and precision-recall curves with their areas
    calibration   expected calibration error, reliability diagram numbers
    compare       two runs on the same images (McNemar, paired bootstrap)
    report, plots report.md and the figures

May import hpml.core, parallel, imaging, models, shards, train.
"""
