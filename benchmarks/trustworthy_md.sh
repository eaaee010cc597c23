#!/bin/bash
# Trustworthy MD, end to end (issue "Trustworthy MD"): every step resumes where a killed run stopped, so run
# the script again until it finishes.
#
#   bash benchmarks/trustworthy_md.sh DATA WORK      (DATA: 216-molecule water from `gnnmd generate water`)
#   FAMILY=csnequip EPOCHS=15 POLISH=0 bash benchmarks/trustworthy_md.sh DATA WORK
#
# 1. a committee: the shipped PME water recipe of FAMILY (nequip: plus the repulsion prior, --hyper
#    repulsion=1.0; csnequip: as shipped), SEEDS (0 1)
# 2. active learning with the committee at 300, 370 and 400 K (gnnmd learn, NVT exploration)
# 3. polish: the best (val MAE) member of the last round, fine-tuned POLISH more epochs on grown data
#    (POLISH=0: that member as it is)
# 4. stability after active learning ("after"), then of the models before it ("before": the shipped model
#    of FAMILY; nequip also "repulsion"), rows into benchmarks/results/md_stability.json
set -euo pipefail
DATA=$(realpath "$1")
WORK=$(realpath -m "$2")
HERE=$(dirname "$(realpath "$0")")
GNNMD=${GNNMD:-gnnmd}
PYTHON=${PYTHON:-python}
FAMILY=${FAMILY:-nequip}
EPOCHS=${EPOCHS:-8}         # epochs per member (nequip: about 7 minutes each on one thread)
POLISH=${POLISH:-7}         # more epochs for the final model (8 + 7: the shipped model's 15)
SEEDS=${SEEDS:-"0 1"}
JOBS=${JOBS:-2}
PS=${PS:-20}                # ps of NVE per stability run
mkdir -p "$WORK/runs"

case $FAMILY in
  nequip) PREFIX=nequip-pme-rep-water-seed; EXTRA=(--hyper repulsion=1.0) ;;
  csnequip) PREFIX=csnequip-pme-water-seed; EXTRA=() ;;
  *) echo "FAMILY must be nequip or csnequip" >&2; exit 2 ;;
esac
member() {  # seed: train (or resume) one committee member
  local name=$PREFIX$1
  local args=(--data "$DATA" --model "$FAMILY" --electrostatics pme --cutoff 4.0 --hyper channels=16 --hyper layers=2
              --hyper l_max=1 "${EXTRA[@]}" --batch-size 1 --lr 0.005 --warmup 1 --lr-decay 0.9
              --epochs "$EPOCHS" --patience 100 --seed "$1" --threads 1 --no-progress --runs-dir "$WORK/runs"
              --name "$name" --checkpoint-every 1)
  local done
  done=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['epochs_run'])" \
         "$WORK/runs/$name/summary.json" 2>/dev/null || echo 0)
  [ "$done" -ge "$EPOCHS" ] && return 0
  if ls "$WORK/runs/$name"/checkpoints/epoch_*.pt >/dev/null 2>&1; then "$GNNMD" train "${args[@]}" --resume
  else "$GNNMD" train "${args[@]}" --overwrite; fi
}
stability() {  # stage model...: NVE at 370, 300 and 400 K, two seeds each, beside LAMMPS from the same starts
  local stage=$1; shift
  "$PYTHON" "$HERE/md_stability.py" --data "$DATA" --stage "$stage" --models "$@" --temperatures 370 300 400 \
    --seeds 1 2 --picoseconds "$PS" --work "$WORK/stability" --jobs 2
}
MEMBERS=()
for seed in $SEEDS; do member "$seed" & MEMBERS+=("$WORK/runs/$PREFIX$seed/best.pt"); done
wait

"$GNNMD" learn --data "$DATA" --models "${MEMBERS[@]}" --out "$WORK/learn" --rounds 2 \
  --temperatures 300 370 400 --steps 5000 --epochs 2 --max-frames 20 --jobs "$JOBS" --no-progress
read -r FINAL GROWN < <("$PYTHON" -c "import json,sys; r=json.load(open(sys.argv[1]))
best=min(r['rounds'][-1]['members'] or [{'model': r['final']['models'][0], 'best_val_force_mae': 0}],
         key=lambda m: m['best_val_force_mae'])   # the member with the lowest validation MAE
print(best['model'], r['final']['data'])" "$WORK/learn/report.json")
POLISHED=$WORK/runs/after-polished
if [ "$POLISH" -le 0 ]; then
  AFTER=$FINAL
elif [ ! -f "$POLISHED/summary.json" ]; then
  AGAIN=--overwrite; ls "$POLISHED"/checkpoints/epoch_*.pt >/dev/null 2>&1 && AGAIN=--resume
  "$GNNMD" finetune --from "$FINAL" --data "$GROWN" --epochs "$POLISH" --lr 0.002 --warmup 1 --lr-decay 0.9 \
    --electrostatics pme --batch-size 1 --patience 100 --checkpoint-every 1 --threads 1 --no-progress \
    --runs-dir "$WORK/runs" --name after-polished "$AGAIN"
fi
stability after "${AFTER:-$POLISHED/best.pt}"
stability before "$HERE/models/$FAMILY-pme-water/best.pt"
[ "$FAMILY" = nequip ] && stability repulsion "${MEMBERS[0]}"
exit 0
