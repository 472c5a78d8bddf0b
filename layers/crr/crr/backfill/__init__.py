"""Backfill: copy the objects that predate a rule, over key ranges worked at once, next to live replication.

A job divides the rule's prefixes (none: the whole bucket) into key ranges (ranges.py): one per prefix at
first, divided by probes into up to the job's workers, and split further while the job runs whenever a
range turns out large (fanout.py). Up to ``workers`` ranges are copied at once (the workflow's Map,
workflow.py), each one page of at most ``page_size`` keys per step, in S3's key order. Each range keeps
its own cursor (the last key consumed) in its item of the rules table, so an interrupted job resumes
every range from where it stood. The cursor is a key given as ``StartAfter`` rather than a continuation
token: it is readable, means the same to every S3-compatible server, and lists the destination over the
same range. Memory holds one page per step, whatever the bucket holds.

One step, ``BackfillEngine.copy_page`` (engine.py):
1. lists one source page of its range (one ListObjectsV2 request: ``Prefix`` = the range's prefix,
   ``StartAfter`` = its cursor, keys past its upper bound dropped) and the destination over the same keys
   (stopping once the destination listing passes the page's last key: usually one request);
2. skips every object already replicated: for a one-way rule, one the destination lists with the same
   size and ETag; for any rule, one the ledger says crr applied at exactly the listed write (ETag and
   Last-Modified; one BatchGetItem per 100 keys present on both sides), which is how an SSE-KMS
   replica (whose ETag is its own) is recognised;
3. copies the others with bounded concurrency, each with ONE request on the fast path: CopyObject with
   ``MetadataDirective=COPY`` and ``TaggingDirective=COPY`` (content headers, user metadata and tags come
   along without being read), pinned by ``CopySourceIfMatch`` to the listed ETag, with the rule's storage
   class and, where both buckets use ACLs, the source's grants;
4. records each copied key in the ledger, conditionally on "no entry yet";
5. counts ahead, while the page is copied: the range's counting cursor lists up to ``count_pages``
   further pages of it, keys only, until its end, so a job shows a percentage (``percent_complete``) once
   every range is counted, long before it ends. The count starts with the copy's own first page, so it
   never lags behind the copy; the last key of each page it lists is a boundary the range can be split
   at, and when the job wants more ranges a probe (ListObjectsV2 ``MaxKeys=1`` from halfway through
   what nobody listed yet) finds one far ahead.

Why this never overwrites a newer live write, nor resurrects a deleted object
-----------------------------------------------------------------------------
The live path (crr.replication) owns every change made after the listing; the backfill only has to
never leave an older state behind it.
- An object overwritten or deleted between the listing and the copy is not copied: the copy is pinned to
  the listed ETag, so S3 refuses it (412 / NoSuchKey). It counts as *superseded*: its own notification
  brings the live path.
- A copy that passed its precondition may still land *after* the live path copied a newer version, or
  deleted the replica (S3 reads the source when the request starts and writes when it ends). Both the
  backfill and the live path then write the key's ledger entry, and both write conditionally: the
  backfill on "no entry yet", the live path on the revision it read. Whichever writes second fails its
  condition, and reconciles the key again from the source's *current* state (HEAD, then copy or
  delete). The backfill does that through the live path itself (the ``reconcile`` callable, which the
  wiring makes ``Replicator.apply`` of a change without sequencer, see reconcile.py); the live path
  does the symmetric thing when the backfill's entry landed first. So the last write to the replica is
  never older than the last source state either of them saw.
- A ledger write that fails for another reason (throttling) cannot tell who won, so that key is treated
  as failed and handed to the replication queue, which reconciles it. A step cut off between a copy and
  its ledger write records nothing: the page runs again, lists the source afresh, and copies any replica
  that differs from it.

The fast path cannot see an object's encryption and does not write crr's replica marker (the ledger
entry records the key as replicated, with the replica's own ETag from the CopyObject answer, by which
`crr verify` recognises a replica whose ETag is not the source's). So every object of a two-way rule
(whose loop guard and last-writer-wins need the marker), of a rule with ``replica_kms_key_arn`` (whose
SSE-KMS objects are re-encrypted), and of any rule when the stack may decrypt SSE-KMS sources
(``sse_kms_sources``: a rule without a replica key must refuse those, as the live path does), goes
through ``reconcile`` instead: HEAD, copy with the marker, conditional ledger write. So do objects
uploaded in parts (their replica keeps the part layout, hence the ETag) and objects above 5 GiB. An
SSE-KMS object under a key the stack does not list (the AWS managed key ``aws/s3`` included) is kept
from the fast path by IAM: the functions' policy denies kms:Decrypt through S3 on every unlisted key, so
its copy is refused and the key goes to the replication queue, where the live path refuses it with its
reason, as for a live change.

Failures: an object that fails (throttled, denied, ...) never stops the page and is never lost: its key
is sent to the replication queue as a synthetic change notice (configuration ``crr-backfill``), so the
live path retries it with backoff and, in the end, its dead-letter queue holds it with the reason. A
failure of the whole page (listing refused, bucket missing, the queue unreachable) raises
BackfillPageError; nothing of the page is recorded and running it again is safe.

Where each part lives (the package imports none of them here, so ``crr.ports`` can name the models
without importing the engine):

    models.py     the values: jobs in the rules table, page requests and results crossing the Step
                  Functions boundary, listing entries, and ObjectOutcome, the one name of what a page
                  did with each object (its counters are named by it)
    engine.py     BackfillEngine: one page, from its listing to its result (checks, the count ahead,
                  failed keys to the replication queue)
    pages.py      listing: a page filled across prefixes, the destination over its range, the count
    triage.py     per listed object, by the destination listing and the ledger: skip, fast copy or
                  reconcile
    copying.py    the copy pool: the fast path (one CopyObject, then the ledger) and the hand-over to
                  ``reconcile``, each object's ObjectResult
    reconcile.py  the live path as the backfill's ``reconcile``, and how its outcomes count
    tally.py      a page's ObjectResults summed into its PageCounts and failure samples
    budget.py     how much a page may hold: the byte budget from the step's time left
    workflow.py   the steps the state machine calls (BackfillSteps) and the CLI's BackfillControl
    ranges.py     key ranges of a prefix: bounds, splitting, where to probe
    fanout.py     which range a worker takes, when a range is split and how its count is shared out

The in-process runner (a job's workers as threads, stepping as the state machine does) is used only by
tests and benchmarks, so it is not in the layer: tests/support/backfill_runner.py.
"""
