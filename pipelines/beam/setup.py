"""Ships the pipeline's own package to Dataflow workers (`--setup_file ./setup.py`).

The envelope itself travels as its wheel (`--extra_package`), as the article shipped its
own package: it is not on PyPI, so it is not listed in install_requires.
"""

import setuptools

setuptools.setup(
    name="envelope-wordcount",
    version="1.0.0",
    description="The article's word count on Apache Beam, over pubsub-envelope",
    packages=["envelope_wordcount"],
)
