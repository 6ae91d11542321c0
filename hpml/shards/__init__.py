"""The contract between preprocessing and everything downstream: TFRecord shards + manifest.

    schema      the record's fields, written and parsed in one place; shard names
    manifest    manifest.json's name, version and reader; ManifestError, ShardError
    shardset    ShardSet: a shard folder read and checked once, handed down as a value
    verify      `hpml shards verify`: recompute everything the manifest claims

May import hpml.core.
"""
