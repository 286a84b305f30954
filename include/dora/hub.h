/* hub.h - models in the Hugging Face hub cache, by repository id; never the network.
 *
 * A base given as ORG/NAME or ORG/NAME@REVISION that is no local path is
 * looked up in the cache huggingface_hub keeps: $HF_HUB_CACHE, else
 * $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub. There, models--ORG--NAME/refs/REVISION (default
 * "main") holds a commit hash, and snapshots/HASH/ the files (symlinks into
 * blobs/); a REVISION of 40 hex digits names a snapshot directly. Nothing is
 * downloaded: a repository or revision not in the cache is an error naming
 * the cache folder.
 */
#ifndef DORA_HUB_H
#define DORA_HUB_H

#include "dora/error.h"

/* 1 if SPEC has the form of a repository id (ORG/NAME[@REVISION]: ORG and NAME
 * of letters, digits, '.', '_', '-', not starting with '.'), with *SNAPSHOT
 * the snapshot folder (allocated); 0 if SPEC is not of that form; -1 with
 * ERR set when it is but the cache does not hold it. The caller checks first
 * that SPEC is no local path. */
int dora_hub_resolve(const char *spec, char **snapshot, dora_err *err);

/* The repository id a base's path names, for titles: PATH itself when it has
 * the form above and is no local path; "ORG/NAME" when one of its folders is
 * the cache's models--ORG--NAME (the repository, or a snapshot in it); else
 * NULL (or out of memory). Allocated. */
char *dora_hub_repo_id(const char *path);

#endif
