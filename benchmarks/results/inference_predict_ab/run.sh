set -e
# old = git worktree at 3057612^ (/tmp/wt_old), new = e2ee6ce (/tmp/wt_new); OUT = results folder
S=/work/main/benchmarks/.scratch
R=$S/inference/run_deepfm
for i in 1 2 3; do
 for rows in 100000 10000; do
  for v in old new; do
   cd /tmp/wt_$v
   ADRANK_DATA_DIR=/work/shared/data /work/main/.venv/bin/python -m benchmarks inference --run-dir $R --scratch $S --rows $rows --batch-sizes "" --threads 2 --results-dir $OUT/$v-$rows-$i > $OUT/log-$v-$rows-$i.txt 2>&1
   echo "$v $rows $i $(grep 'samples/s' $OUT/log-$v-$rows-$i.txt | head -1)"
  done
 done
done
