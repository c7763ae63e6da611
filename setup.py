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
    "python-magic>=0.4.27",
]

# Store drivers are extras: only apps that use that store need them
# (a missing one stops start-up naming the extra).
redis_require = ["redis>=5.0"]
postgresql_require = ["psycopg[binary,pool]>=3.1"]
# Object storage for uploads (sessup.upload.storage = s3). boto3 >= 1.36 has the
# request_checksum_calculation switch the add-on turns to "when_required".
s3_require = ["boto3>=1.36"]
# Encryption at rest of session records (sessup.session.encrypt): AES-GCM and HKDF.
encrypt_require = ["cryptography>=42"]
# production.ini's server (egg:pyramid_sessup#gunicorn): gthread workers, the body
# streamed to the application; 27 bounds the drain of a body the app refused.
production_require = ["gunicorn>=27"]

tests_require = [
    *encrypt_require,
    *redis_require,
    *postgresql_require,
    *s3_require,
    *production_require,
    "pytest>=8",
    "WebTest>=3.0",
    "playwright>=1.40",
    "tuspy>=1.0",
    "requests>=2.28",
    # An S3-compatible server run as its own process (moto_server) for the
    # object-storage tests; only the plain S3 API goes to it.
    "moto[server]>=5.0",
    # Lint and type checks run in CI (scripts/test.sh).
    "ruff>=0.6",
    "mypy>=1.10",
]

setup(
    name="pyramid_sessup",
    version="0.1.0",
    description="Sessions and file uploads for Pyramid, done properly",
    long_description=README,
    long_description_content_type="text/markdown",
    license="MIT",
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.13",
        "Framework :: Pyramid",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Application",
    ],
    python_requires=">=3.11",
    packages=find_packages(exclude=["tests", "tests.*", "bench"]),
    include_package_data=True,
    zip_safe=False,
    install_requires=requires,
    extras_require={"redis": redis_require, "postgresql": postgresql_require, "s3": s3_require,
                    "encrypt": encrypt_require, "production": production_require,
                    "testing": tests_require},
    entry_points={
        "paste.app_factory": ["main = pyramid_sessup.demo:main"],
        # pserve's servers: a taken port is one line; the served address is logged (serve.py, serving.py).
        "paste.server_factory": ["waitress = pyramid_sessup.serve:waitress_factory",
                                 "gunicorn = pyramid_sessup.serving:gunicorn_factory"],
        "console_scripts": [
            "sessup-sessions = pyramid_sessup.scripts.sessions:main",
            "sessup-sweep = pyramid_sessup.scripts.sweep:main",
        ],
    },
)
