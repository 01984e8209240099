./main.py --drop-rate 0.3
