"""Exports the two small real data sets the examples train on, from scikit-learn's bundled copies
(no download): `pip install scikit-learn`, then `python examples/export_datasets.py`.

- examples/iris/iris.csv: Fisher's Iris (UCI Machine Learning Repository, CC BY 4.0), 150 rows,
  four measurements in cm and the species as a string label.
- examples/digits/digits-{images,labels}.idx: UCI "Optical Recognition of Handwritten Digits"
  (Alpaydin and Kaynak, 1998; CC BY 4.0), the 1,797 8x8 test images with values 0..16, as IDX
  (u8), the format of MNIST.
"""
import os
import struct

from sklearn.datasets import load_digits, load_iris

HERE = os.path.dirname(os.path.abspath(__file__))


def idx_u8(path, array):
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]))
        for d in array.shape:
            f.write(struct.pack(">I", d))
        f.write(array.astype("uint8").tobytes())


def main():
    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    with open(os.path.join(HERE, "iris", "iris.csv"), "w", newline="\n") as f:
        f.write(",".join(names) + "\n")
        for row, label in zip(iris.data, iris.target):
            f.write(",".join(f"{v:g}" for v in row) + f",{iris.target_names[label]}\n")
    digits = load_digits()
    images = digits.images.astype("uint8")
    idx_u8(os.path.join(HERE, "digits", "digits-images.idx"), images)
    idx_u8(os.path.join(HERE, "digits", "digits-labels.idx"), digits.target)
    print("iris", iris.data.shape, "digits", images.shape)


if __name__ == "__main__":
    main()
