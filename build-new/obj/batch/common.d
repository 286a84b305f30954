build-new/obj/batch/common.o: src/batch/common.c src/batch/common.h \
 include/dora/error.h src/core/util.h
src/batch/common.h:
include/dora/error.h:
src/core/util.h:
