"""The audio file extensions clews-pipe looks for, declared once.

Catalogs resolve a track id to ``<id>.<ext>`` trying :data:`CATALOG_EXTENSIONS` in order of
preference (the downloader's mp4/m4a, transcoded mp3, then lossless); ``clews-pipe embed`` walks a
folder picking up any of :data:`AUDIO_EXTENSIONS` (anything else PyAV decodes can still be named
explicitly).
"""

#: in order of preference when one track has several files
CATALOG_EXTENSIONS = ("mp3", "mp4", "m4a", "flac", "ogg", "opus", "wav")
#: every extension picked up when walking a folder (lower case, no dot)
AUDIO_EXTENSIONS = CATALOG_EXTENSIONS + (
    "oga", "aac", "webm", "mka", "mkv", "aif", "aiff", "wma", "wv", "ape", "ac3", "caf", "au", "w64", "3gp",
)
