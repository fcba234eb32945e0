"""The article's word-count pipeline on Apache Beam, opening messages with pubsub_envelope.

ReadFromPubSub -> open each message (opened / dead letter) -> words -> fixed windows ->
count -> `word: count` to the output topic, with the window attributes the Rust
`pipeline` writes (so the toolkit's `subscriber` reads either); messages that cannot be
opened go to the dead-letter topic with `reject_reason` and `reject_detail`, as the Rust
pipeline sends them. Run it with `python -m envelope_wordcount --help`.
"""

from .transforms import CountSealedWords, OpenSettings  # noqa: F401
