set terminal pngcairo size 1800,560 font 'sans,10'
set output 'bench/capacity/scale.png'
set multiplot layout 1,3 title "imgflow on a Temporal cluster (PostgreSQL, mTLS): 10 NAS, 200 compute hosts, 1000 images; 2 cores"
set bmargin 11
set logscale x 2
set xlabel 'concurrency (operations in flight)'
set grid
set key bottom right
set title 'throughput (map, unmap and delete operations per second)'
set ylabel 'operations/s'
set yrange [0:*]
plot 'bench/capacity/scale-steps-zfs.tsv' using 1:2 with linespoints lw 2 pt 7 title 'zfs', 'bench/capacity/scale-steps-qcow2.tsv' using 1:2 with linespoints lw 2 pt 7 title 'qcow2'
set title 'map latency, p95'
set ylabel 'ms'
plot 'bench/capacity/scale-steps-zfs.tsv' using 1:3 with linespoints lw 2 pt 7 title 'zfs', 'bench/capacity/scale-steps-qcow2.tsv' using 1:3 with linespoints lw 2 pt 7 title 'qcow2'
unset logscale x
set title 'CPU seconds per operation at saturation, by process'
set ylabel 'CPU s / operation'
set xlabel ''
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by 40 right font 'sans,8'
set key top right
set datafile separator '\t'
plot 'bench/capacity/scale-cpu.tsv' using 2:xtic(1) title 'zfs', 'bench/capacity/scale-cpu.tsv' using 3:xtic(1) title 'qcow2'
unset multiplot
