#!/usr/bin/env python3
"""Builds a unit file from its template: @SBINDIR@ becomes the install
path and @COMMON@ the settings both service units share (common.conf), so
that they are written once."""
import sys

template, common, sbindir, output = sys.argv[1:5]
with open(common) as f:
    shared = f.read()
with open(template) as f:
    text = f.read()
with open(output, 'w') as f:
    f.write(text.replace('@SBINDIR@', sbindir).replace('@COMMON@\n', shared))
