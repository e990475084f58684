"""Two jobs of retrieve.py: index a gallery into a feature base (an HDF5 file, or a Milvus
collection: retrieval/milvus.py); search it with queries (results.csv, the contest's
one-line-per-query file, and metrics when labels are known). The third, package, is in
retrieval/package.py. Every URL may be local, obs:// or s3://; remote bases are worked on in
the cache and uploaded when complete."""
import csv
import io
import json
import logging
import os
import time

import numpy as np

import obs_utils
from errors import UserError
from inputs import fetch, prepare

from . import base, metrics, milvus, search, whiten
from .embed import Embedder, find_package

log = logging.getLogger("retrieval")
CHUNK = 1024  # images embedded between two flushes of the base: what an interruption costs


def _local_base(index_url, cache_root, download=True):
    """A local path for the base at `index_url` (remote: its cache copy, fetched if asked)."""
    if not obs_utils.is_remote(index_url):
        path = obs_utils.parse(index_url).path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return path
    where = obs_utils.parse(index_url)
    path = os.path.join(cache_root, "index", where.bucket, *where.path.strip("/").split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if download:
        if obs_utils.exists(index_url):
            obs_utils.cached_copy(index_url, path)
        else:  # gone (or a new bucket of that name): an old copy here is no longer the base
            obs_utils.forget_cached(path)
    return path


def _images(data_url, cache_root, report_url, data_format, manifest):
    """The screened images of --data_url (none given: the built-in demo digits)."""
    folder = fetch.fetch_data(data_url, cache_root)
    return prepare.prepare_images(folder, report_url, cache_root, data_format, manifest)


def _storable(samples, what):
    """The samples whose names UTF-8 can hold (the base and the CSVs store them so); each
    other is named in the log (its bytes shown) and left out, before any embedding."""
    kept = []
    for sample in samples:
        try:
            sample.rel.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(sample.rel)
            log.warning("skipped %s image %r: its name is not UTF-8 (the base and the CSVs "
                        "store names as UTF-8); rename it", what, raw)
            continue
        kept.append(sample)
    return kept


def _embed_named(embedder, samples, batch_size, desc):
    """Features of `samples` and the positions that embedded (a broken image is named in the
    log and skipped)."""
    features, failed = embedder.embed([s.path for s in samples], batch_size, desc)
    for position, reason in sorted(failed.items()):
        log.warning("skipped %s: %s", samples[position].rel, reason)
    keep = [i for i in range(len(samples)) if i not in failed]
    return features[keep], keep


def index(run, cache_root):
    """retrieve.py index: embed the gallery into the base at --index_url (only images the base
    does not hold yet, unless --rebuild); returns the summary line."""
    if run.whiten_dim < 0 or run.whiten_power < 0:
        raise UserError(f"--whiten_dim counts axes (0: all) and --whiten_power is an exponent "
                        f"from 0 (rotate only) to 1 (whiten fully); got {run.whiten_dim} and "
                        f"{run.whiten_power}")
    package_folder = find_package(run.model_dir, cache_root)
    if milvus.is_milvus(run.index_url):
        return _index_milvus(run, cache_root, package_folder)
    path = _local_base(run.index_url, cache_root, download=not run.rebuild)
    tta = run.embed_tta
    if os.path.exists(path):
        with base.open_base(path) as old_base:
            if tta is None and not run.rebuild:  # unless told otherwise, as the base was
                tta = old_base.meta["embed_tta"]
            if old_base.whitening and not run.whiten:
                log.warning("%s was whitened; this index is not (pass --whiten=true on every "
                            "index of a whitened base)", run.index_url)
    embedder = Embedder(package_folder, tta)
    with base.writing(path):
        return _index_into(run, cache_root, embedder, path)


def _embed_in_chunks(embedder, samples, batch_size):
    """(features, the samples that embedded) for each CHUNK of `samples` in turn, each to be
    stored before the next is embedded; a broken image is named in the log and left out."""
    for start in range(0, len(samples), CHUNK):
        chunk = samples[start:start + CHUNK]
        features, done = _embed_named(embedder, chunk, batch_size, "embedding gallery")
        yield features, [chunk[j] for j in done]


def _index_summary(run, total, attempted, embedded, seconds, counts, meta, tail, what):
    """index's closing line; a UserError when the base (`what`) ended up empty."""
    if not total:
        raise UserError(f"no image of {run.data_url or 'the demo'} could be embedded: the "
                        f"{what} is empty")
    speed = f" at {attempted / max(seconds, 1e-9):.1f} images/s" if attempted else ""
    tta = "" if meta["embed_tta"] == "none" else f", {meta['embed_tta']} TTA"
    return (f"indexed {total} images into {run.index_url} ({embedded} embedded{speed}, "
            f"{counts}; {meta['dim']}-d, {meta['backbone']} {meta['fingerprint']}{tta}{tail})")


def _index_into(run, cache_root, embedder, path):
    """index's work, holding the base's lock."""
    report_url = os.path.splitext(run.index_url)[0] + "_screening.json"
    samples, class_names = _images(run.data_url, cache_root, report_url, run.data_format,
                                   run.manifest)
    samples = _storable(samples, "gallery")
    reusable = {} if run.rebuild else base.reusable_rows(path, embedder.meta)
    # screening hashed every file's bytes (digest)
    old = [s for s in samples if (s.rel, s.digest) in reusable]
    new = [s for s in samples if (s.rel, s.digest) not in reusable]
    log.info("gallery: %d images, %d already embedded by this model, %d to embed",
             len(samples), len(old), len(new))

    def append(features, chosen):
        writer.append(features, [s.rel for s in chosen], [s.digest for s in chosen],
                      [s.label if class_names else -1 for s in chosen])

    writer = base.Writer(path, embedder.meta, class_names or [], float16=run.float16)
    try:
        if old:
            append(np.stack([reusable[(s.rel, s.digest)] for s in old]), old)
        embedded, started = 0, time.perf_counter()
        for features, kept in _embed_in_chunks(embedder, new, run.batch_size):
            append(features, kept)
            embedded += len(kept)
        seconds = time.perf_counter() - started
        whitened = ""
        if run.whiten:
            mean, projection = whiten.learn(writer.raw_blocks(), run.whiten_dim,
                                            run.whiten_power)
            writer.set_whitening(mean, projection, run.whiten_power)
            whitened = (f"; whitened: {projection.shape[1]} of {projection.shape[0]} axes, "
                        f"power {run.whiten_power:g}")
        writer.commit()
    finally:
        writer.close()
    if obs_utils.is_remote(run.index_url):
        obs_utils.copy(path, run.index_url)
    with base.open_base(path) as fb:
        total = len(fb)
    return _index_summary(run, total, len(new), embedded, seconds,
                          f"{len(old)} kept, {len(new) - embedded} skipped", embedder.meta,
                          whitened, "base")


def _index_milvus(run, cache_root, package_folder):
    """index into a Milvus collection, in place: rows the gallery no longer holds as they
    are (gone, changed bytes or label) are deleted, images it does not hold yet embedded."""
    for flag, value in (("whiten", run.whiten), ("float16", run.float16)):
        if value:
            raise UserError(f"--{flag}=true is for HDF5 bases; a Milvus collection stores "
                            "float32 vectors as embedded: leave it out, or index into a .h5")
    uri, collection_name = milvus.parse(run.index_url)
    report_url = (obs_utils.join(run.output_url, f"{collection_name}_screening.json")
                  if uri.startswith("http") else os.path.splitext(uri)[0] + "_screening.json")
    samples, class_names = _images(run.data_url, cache_root, report_url, run.data_format,
                                   run.manifest)
    samples = _storable(samples, "gallery")
    for sample in [s for s in samples if not milvus.storable_name(s.rel)]:
        log.warning("skipped %s: its name is longer than the %d bytes a Milvus key holds",
                    sample.rel, milvus.NAME_LENGTH)
    samples = [s for s in samples if milvus.storable_name(s.rel)]
    wanted = {s.rel: (s.digest, class_names[s.label] if class_names else "") for s in samples}
    tta = run.embed_tta
    if tta is None and not run.rebuild:  # unless told otherwise, as the collection was
        tta = milvus.existing_meta(run.index_url).get("embed_tta")
    embedder = Embedder(package_folder, tta)
    with milvus.open_for_index(run.index_url, embedder.meta, run.search,
                               run.rebuild) as collection:
        held = {row["name"]: (row["digest"], row["label"])
                for batch in collection.held() for row in batch}
        stale = [name for name, row in held.items() if wanted.get(name) != row]
        milvus.delete(collection, stale)
        new = [s for s in samples if held.get(s.rel) != wanted[s.rel]]
        log.info("gallery: %d images, %d already in %s, %d to embed, %d rows removed",
                 len(samples), len(samples) - len(new), run.index_url, len(new), len(stale))
        embedded, started = 0, time.perf_counter()
        for features, kept in _embed_in_chunks(embedder, new, run.batch_size):
            milvus.insert(collection, features, [s.rel for s in kept],
                          [wanted[s.rel][0] for s in kept], [wanted[s.rel][1] for s in kept])
            embedded += len(kept)
        seconds = time.perf_counter() - started
        total, kind = len(collection), collection.kind
    return _index_summary(
        run, total, len(new), embedded, seconds, f"{len(samples) - len(new)} kept, "
        f"{len(stale)} removed, {len(new) - embedded} skipped", embedder.meta,
        f"; Milvus {milvus.INDEXES[kind][0]}", "collection")


def _ranked(run, fb, queries):
    """(scores, gallery rows) [Q, top_k] by --search, with the re-ranking asked for:
    --database_augmentation (the gallery, in memory, averaged with its own neighbours) and
    --query_expansion (each query averaged with its first results, then searched again), or
    --rerank=kreciprocal (every query-gallery distance, in memory, re-ranked)."""
    k = max(run.top_k, run.query_expansion)
    if run.database_augmentation:
        log.info("database-side augmentation over %d neighbours (the gallery in memory)",
                 run.database_augmentation)
        gallery = search.database_augmentation(
            np.concatenate([block for _, block in fb.blocks()]), run.database_augmentation,
            run.dba_alpha)
        blocks, rows = (lambda: [(0, gallery)]), (lambda idx: gallery[idx])
    else:
        blocks, rows = fb.blocks, fb.rows
    if run.rerank == "kreciprocal":
        gallery = np.concatenate([block for _, block in blocks()])
        log.info("k-reciprocal re-ranking of %d queries and %d gallery images "
                 "(k1 %d, k2 %d, lambda %.2f)", len(queries), len(gallery), run.rerank_k1,
                 run.rerank_k2, run.rerank_lambda)
        return search.k_reciprocal_rerank(queries, gallery, run.top_k, run.rerank_k1,
                                          run.rerank_k2, run.rerank_lambda)
    if (run.search or "exact") == "exact":
        def find(q, count):
            return search.exact_search(q, blocks(), count)
    else:
        index = search.approximate_index(blocks(), queries.shape[1], run.search)

        def find(q, count):
            return search.approximate_search(index, q, count)
        sample = queries[:200]
        recall = search.recall_at_k(find(sample, 10)[1], search.exact_search(
            sample, blocks(), 10)[1])
        log.info("approximate search (%s): recall@10 %.4f against exact on %d queries",
                 run.search, recall, len(sample))
    scores, ranked = find(queries, k)
    if run.query_expansion:
        n = run.query_expansion
        queries = search.query_expansion(queries, rows(ranked[:, :n]), scores[:, :n],
                                         run.qe_alpha)
        scores, ranked = find(queries, run.top_k)
    return scores[:, :run.top_k], ranked[:, :run.top_k]


def _contest_field(name):
    """A name as a CSV field: quoted (quotes doubled) when it holds a comma, quote, brace or
    line break, so it cannot shift its neighbours; plain otherwise, as the contest wrote them."""
    if any(c in name for c in ',"{}\r\n'):
        return '"' + name.replace('"', '""') + '"'
    return name


def submission_line(query, gallery_names):
    """One line of the DIGIX submission format: `query.jpg,{g1.jpg,g2.jpg,...}`."""
    return "{},{{{}}}\n".format(_contest_field(query),
                                 ",".join(_contest_field(n) for n in gallery_names))


def _csv_text(rows, header):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _check_rerank(run):
    """Refuse, before anything is embedded, what --rerank=kreciprocal cannot combine with."""
    if run.rerank != "kreciprocal":
        return
    if run.search not in (None, "exact"):
        raise UserError(f"--rerank=kreciprocal needs every query-gallery distance, which "
                        f"--search={run.search} does not compute: pass --search=exact")
    if run.query_expansion:
        raise UserError("--rerank=kreciprocal already expands each query over its neighbours: "
                        "pass --query_expansion=0 with it")
    if not 0.0 <= run.rerank_lambda <= 1.0:
        raise UserError(f"--rerank_lambda is the original distance's share, from 0 to 1; got "
                        f"{run.rerank_lambda}")


def _open_base(run, cache_root):
    """The base at --index_url, open for search: HDF5 (fetched to the cache when remote) or
    Milvus."""
    if milvus.is_milvus(run.index_url):
        for flag, value in (("database_augmentation", run.database_augmentation),
                            ("rerank", run.rerank != "none")):
            if value:
                raise UserError(f"--{flag} holds the whole gallery in memory, which a Milvus "
                                "base is there to avoid: leave it out, or search a .h5 base")
        return milvus.open_base(run.index_url)
    if obs_utils.is_remote(run.index_url) and not obs_utils.exists(run.index_url):
        raise base.BaseError(f"{run.index_url} does not exist: make it with python "
                             "retrieve.py index")
    return base.open_base(_local_base(run.index_url, cache_root))


def _gallery_labels(fb):
    """Every gallery image's label, as a class name ('' when unknown), in row order; a
    Milvus collection's are streamed."""
    if isinstance(fb, milvus.MilvusBase):
        return np.array([row["label"] for batch in fb.held() for row in batch], dtype=object)
    return np.array(fb.label_names + [""], dtype=object)[fb.labels]  # -1: ''


def _hits_h5(run, fb, queries):
    """(scores, gallery names, gallery labels) per query from an HDF5 base (labels are class
    names, '' when unknown)."""
    scores, ranked = _ranked(run, fb, fb.prepare(queries))
    names, labels = fb.names, _gallery_labels(fb)
    found = [[g for g in row if g >= 0] for row in ranked.tolist()]
    return ([s[:len(f)] for s, f in zip(scores.tolist(), found)],
            [[names[g] for g in f] for f in found], [labels[f].tolist() for f in found])


def _hits_milvus(run, collection, queries):
    """_hits_h5's three, from a Milvus collection, by its own index: alpha-QE searches again
    with the stored vectors of the first results; an approximate index's recall@10 against
    exact search (every stored vector streamed once) is logged."""
    if run.search and run.search != collection.kind:
        log.warning("%s was made with --search=%s: it searches with that (index with "
                    "--rebuild=true --search=%s for another)", run.index_url, collection.kind,
                    run.search)
    k = max(run.top_k, run.query_expansion)
    scores, names, labels = collection.search(queries, k)
    if run.query_expansion:
        n = run.query_expansion
        first = [row[:n] + row[:1] * (n - len(row[:n])) for row in names]  # pad: the best
        weights = np.array([row[:n] + [0.0] * (n - len(row[:n])) for row in scores])
        neighbours = collection.vectors([name for row in first for name in row])
        queries = search.query_expansion(queries, neighbours.reshape(len(queries), n, -1),
                                         weights, run.qe_alpha)
        scores, names, labels = collection.search(queries, run.top_k)
    if collection.kind != "exact":
        sample = queries[:200]
        stored = []  # names in the order exact search sees the blocks

        def blocks():
            for batch in collection.held(vectors=True):
                yield len(stored), np.asarray([row["vector"] for row in batch], np.float32)
                stored.extend(row["name"] for row in batch)
        exact = search.exact_search(sample, blocks(), 10)[1]
        recall = search.recall_at_k(
            [row[:10] for row in collection.search(sample, 10)[1]],
            [[stored[g] for g in row] for row in exact.tolist()])
        log.info("Milvus %s: recall@10 %.4f against exact on %d queries",
                 milvus.INDEXES[collection.kind][0], recall, len(sample))
    return ([s[:run.top_k] for s in scores], [n[:run.top_k] for n in names],
            [lab[:run.top_k] for lab in labels])


def search_queries(run, cache_root):
    """retrieve.py search: the top-k gallery images per query into --output_url; returns the
    summary line (the metrics when queries and gallery carry labels)."""
    _check_rerank(run)
    package_folder = find_package(run.model_dir, cache_root)
    with _open_base(run, cache_root) as fb:
        tta = fb.meta["embed_tta"]
        embedder = Embedder(package_folder, tta)  # queries embedded as the gallery was
        fb.check_model(embedder.meta)
        if not len(fb):
            raise base.BaseError(f"{run.index_url} holds no images: index a gallery first")
        samples, class_names = _images(run.data_url, cache_root, obs_utils.join(
            run.output_url, "screening_report.json"), run.data_format, run.manifest)
        samples = _storable(samples, "query")
        queries, done = _embed_named(embedder, samples, run.batch_size, "embedding queries")
        samples = [samples[i] for i in done]
        if not samples:
            raise UserError(f"no query image of {run.data_url} could be embedded")
        if tta != "none":
            log.info("queries embedded with %s TTA, as the base was", tta)
        if fb.whitening:
            log.info("the base is whitened (%d axes): so are the queries",
                     fb.whitening[1].shape[1])
        hits = _hits_milvus if isinstance(fb, milvus.MilvusBase) else _hits_h5
        scores, names, labels = hits(run, fb, queries)
        # only with labelled queries: a Milvus collection's are streamed row by row
        gallery_labels = _gallery_labels(fb) if class_names else None
    rows = [(s.rel, rank + 1, name, f"{score:.6f}")
            for s, ns, ss in zip(samples, names, scores)
            for rank, (name, score) in enumerate(zip(ns, ss))]
    obs_utils.write_text(obs_utils.join(run.output_url, "results.csv"),
                         _csv_text(rows, ["query", "rank", "gallery", "score"]))
    contest = "".join(submission_line(s.rel, ns) for s, ns in zip(samples, names))
    obs_utils.write_text(obs_utils.join(run.output_url, "submission.csv"), contest)
    summary = f"top-{run.top_k} of {len(samples)} queries written to {run.output_url}"
    if gallery_labels is not None and (gallery_labels != "").any():
        query_labels = np.array([class_names[s.label] for s in samples], dtype=object)
        ranked_labels = np.full((len(samples), run.top_k), None, dtype=object)  # None: no hit
        for row, found in zip(ranked_labels, labels):
            row[:len(found)] = found
        scores_ = metrics.retrieval_scores(query_labels, ranked_labels, gallery_labels, k=10)
        obs_utils.write_text(obs_utils.join(run.output_url, "metrics.json"),
                             json.dumps(scores_, indent=2))
        summary = metrics.summary_line(scores_) + "; " + summary
    return summary
