"""`hpml covidx build` and `hpml covidx import`: the COVIDx split from its public sources.

build       scan -> check images -> deduplicate -> split or pin -> train/val/test.txt + split.json
options     BuildOptions: what a build is asked to do
containment every file a row names: a regular file inside its source root
sources/    one reader per upstream layout, and the layout detection
labels      every rule that decides whether a row is used, and as what class
phash       perceptual fingerprints: re-encoded copies of one radiograph
split       patient-level, class-stratified, seeded split
testlist    pin the test set to a published test_COVIDx*.txt
published   `covidx import`: the published train/test files instead of building
skips       skipped rows and missing images, summarised by reason
"""
