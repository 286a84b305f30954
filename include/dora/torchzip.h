/* torchzip.h - PyTorch checkpoints (.bin, .pt, .pth) written by torch.save.
 *
 * Since PyTorch 1.6 torch.save writes a zip archive (entries stored, not
 * compressed): ARCHIVE/data.pkl, the pickled object; ARCHIVE/data/KEY, one raw
 * little-endian record per storage; ARCHIVE/byteorder in newer versions. The
 * archive folder's name varies, so the one "*\/data.pkl" is used. libzip reads
 * and checks the archive (ZIP_CHECKCONS); the records are mapped, not copied:
 * their offsets are observed through a libzip source that serves the mapping.
 * The pickle goes through the restricted interpreter of pickle.h.
 *
 * Tensors honour storage offset, shape and strides; several may share a
 * storage; every size is checked for 64-bit overflow. A contiguous view points
 * into the mapping; a non-contiguous one (a transposed weight, say) is gathered
 * once into a contiguous buffer owned by the file. When a view's elements are
 * distinct elements of its storage, that buffer is at most its record's bytes,
 * so at most the file's own bytes in all. A view whose elements repeat (an
 * expand()ed tensor: stride 0 on a dim of size > 1, or strides that revisit
 * elements) takes more made contiguous than the file holds: all such views of
 * one file share PT_MAX_OVERLAP_BYTES, and one beyond it is refused naming the
 * tensor. Every read of the mapping while the archive is parsed is guarded
 * (guard.h): a file truncated underneath is an error naming it. The legacy
 * (pre-1.6) format and big-endian records are
 * refused with a clear error.
 */
#ifndef DORA_TORCHZIP_H
#define DORA_TORCHZIP_H

#include "dora/error.h"
#include "dora/safetensors.h"

#define PT_MAX_ENTRIES 1000000
#define PT_MAX_PICKLE (1ULL << 30)
#define PT_MAX_OVERLAP_BYTES (16ULL << 20) /* views whose elements repeat, made contiguous */

/* Open PATH as a torch.save zip; on success *out is an st_file with format
 * "pytorch" whose tensors are named by their dotted path in the pickled object
 * (see pickle.h). Release with st_close. */
int pt_open(st_file **out, const char *path, dora_err *err);

#endif
