build-new/obj/cli/suggest.o: src/cli/suggest.c src/cli/cli.h \
 include/dora/error.h include/dora/filter.h include/dora/progress.h
src/cli/cli.h:
include/dora/error.h:
include/dora/filter.h:
include/dora/progress.h:
