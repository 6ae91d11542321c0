"""The Keras models: uint8 gray image in, class probabilities out.

    backbones   ResNet50V2, ResNeXt50-32x4d, EfficientNetB4, MobileNetV2, a tiny CNN
    heads       flatten (the seed's), gap, covidnext
    build       the model: input scaling, backbone, head; local weights; parameter counts

May import hpml.core.
"""
