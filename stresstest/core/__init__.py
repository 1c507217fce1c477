"""What every stage stands on: errors, paths, the command line, records, devices, atomic writes, torchrun,
checkpoints, case folders, sweeps."""
