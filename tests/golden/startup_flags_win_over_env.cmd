CHAOS_DROP_RATE=1 CHAOS_SEED=1 ./main.py --drop-rate 0.5 --seed 7
