import os

from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    README = f.read()

requires = [
    "pyramid>=2.0",
    "pyramid_beaker>=0.9",
    "Beaker>=1.14",
    "waitress>=3.0",
    "colander>=2.0",
    "deform>=2.0.15",
    "pyramid_chameleon>=0.3",
    "multipart>=2.0.1",
    "redis>=5.0",
    "psycopg[binary,pool]>=3.1",
    "python-magic>=0.4.27",
]

tests_require = [
    "pytest>=8",
    "WebTest>=3.0",
    "playwright>=1.40",
    "tuspy>=1.0",
]

setup(
    name="pyramid_sessup",
    version="0.1.0",
    description="Sessions and file uploads for Pyramid, done properly",
    long_description=README,
    long_description_content_type="text/markdown",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Pyramid",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Application",
    ],
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests", "tests.*", "bench"]),
    include_package_data=True,
    zip_safe=False,
    install_requires=requires,
    extras_require={"testing": tests_require},
    entry_points={
        "paste.app_factory": ["main = pyramid_sessup:main"],
        "console_scripts": [
            "sessup-sessions = pyramid_sessup.scripts.sessions:main",
            "sessup-sweep = pyramid_sessup.scripts.sweep:main",
        ],
    },
)
