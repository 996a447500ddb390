#!/bin/sh
# Upper-case the input file into <output dir>/<input stem>.out (the OSCAR supervisor sets both paths).
set -eu
name=$(basename "$INPUT_FILE_PATH")
tr 'a-z' 'A-Z' < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/${name%.*}.out"
