"""A trained model put to use: `hpml predict`, Grad-CAM, `hpml export` with its model card.

    predict     classify PNG, JPEG and DICOM files with a trained run
    gradcam     Grad-CAM for every backbone, and its overlay
    export      a SavedModel and a Keras file, with the preprocessing contract
    modelcard   what the model is, what made it, how well it did, what it is for

May import hpml.core, parallel, imaging, models, shards, train.
"""
